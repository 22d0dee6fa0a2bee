"""The README's Quick start commands are exactly what CI runs."""

from __future__ import annotations

import re

from conftest import REPO


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quick, flags=re.S)
    assert len(commands) == 2
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    for cmd in commands:
        assert cmd.strip() in ci


# README Python blocks that cannot run here, with the reason
NOT_RUN = {
    'MPACalculator(backbone="mace", model="my.model")': "needs the user's own MACE and MatGL model files",
    "from dask_jobqueue import SLURMCluster": "needs a SLURM cluster",
}


def _python_blocks():
    import re

    readme = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.+?)\n```", readme, flags=re.S)


def test_readme_python_examples_run_offline_as_written():
    import warnings

    blocks = _python_blocks()
    ran = 0
    for block in blocks:
        if any(block.startswith(prefix) for prefix in NOT_RUN):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # out-of-domain notes of the heads on a crystal
            exec(compile(block, "README.md", "exec"), {})
        ran += 1
    assert ran == len(blocks) - len(NOT_RUN) and ran >= 2
