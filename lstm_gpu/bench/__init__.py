"""The `lstm-gpu-bench` benchmark: every LSTM path on this machine, checked, then timed.

Modules, one job each: `cases` (grid, inputs, masks), `runners` (one per path),
`timing` (clocks and statistics), `engine` (check then time), `env_info` (machine and
versions), `report` (table, Markdown, JSON), `plot` (PNG, optional matplotlib),
`progress` (a progress bar), `cli` (the command).
"""
