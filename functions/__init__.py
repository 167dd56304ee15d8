"""A toolkit for studying transfer learning in CNNs: where to cut, what to freeze, how much data.

Subpackages by concern, lowest first: core, data, config, models, train, runs, analysis and
efficiency, notebooks; the command line is ``python -m functions``.
"""
