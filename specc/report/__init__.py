"""Reports a person opens in a browser: `specc report BUNDLE` (a run) and `specc plan --html` (a plan).

Each is one self-contained HTML file (inline CSS, plots as inline SVG drawn with matplotlib,
no script and nothing fetched), so it opens offline, attaches to an e-mail and survives a copy.
Imported only by those two commands: matplotlib stays out of `validate` and `plan`.
"""
