"""The lake in S3: its client and object names, the ETL's chunking, writer process and worker.
May import stream, sim, contract and the base modules.
"""
