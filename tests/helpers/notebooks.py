"""A notebook parameter's default as a value (papermill reads it as source text)."""

import ast

from ridematch_nb.config import PROJECT_ROOT
from ridematch_nb.pipeline import notebook_parameters


def notebook_default(stem: str, name: str):
    """The default of parameter ``name`` in notebooks/<stem>.ipynb."""
    params = notebook_parameters(PROJECT_ROOT / "notebooks" / f"{stem}.ipynb")
    return ast.literal_eval(params[name]["default"])
