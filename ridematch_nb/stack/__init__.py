"""The embedded local stack: its servers (services), starting and stopping them, JupyterLab.
May import views and every stage below it (it uses the stages' clients as health checks).
"""
