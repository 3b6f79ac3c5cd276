"""`make bench`, the benchmark scripts on disk and docs/benchmarks.md name the same scripts."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_bench_the_scripts_and_the_docs_agree():
    listed = subprocess.run(["make", "-s", "bench-list"], cwd=REPO, capture_output=True, text=True, check=True)
    make = listed.stdout.split()
    on_disk = sorted(p.name for p in (REPO / "benchmarks").glob("bench_*.py"))
    doc = (REPO / "docs" / "benchmarks.md").read_text()
    block = doc[doc.index("```bash\ncd benchmarks\n"):]
    block = block[:block.index("```", 3)]
    in_docs = re.findall(r"python (bench_\w+\.py)", block)
    assert sorted(make) == on_disk, "make bench must run every script in benchmarks/"
    assert in_docs == make, "docs/benchmarks.md's command block must list make bench's scripts, in its order"
    assert len(set(make)) == len(make)
