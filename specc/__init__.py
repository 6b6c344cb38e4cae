"""specc: a declarative experiment-spec compiler for training large language models.

Pipeline: spec (load + validate) -> diagnostics -> plan -> emit -> launch; the code
that runs inside jobs lives in `specc.runtime` and is the only part that imports torch.
"""

__version__ = "0.1.0"
