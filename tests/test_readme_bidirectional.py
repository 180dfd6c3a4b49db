"""The README's Bidirectional example runs as written and prints what its comments say."""
from __future__ import annotations

import re
from pathlib import Path

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_bidirectional_example_runs(capsys):
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Bidirectional\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md (Bidirectional)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    path = T_.expected_cpu_path()
    assert printed == ["(32, 10, 32)", repr((path, path))]
