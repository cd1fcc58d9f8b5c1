"""Where things are, for every test: the repository, its fixtures, the entry point."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
AUDIO = FIXTURES / "audio"
FAKES = REPO / "tests" / "fakes"  # the fake NVML (`pynvml`), put first on PYTHONPATH
CRD = REPO / "crds" / "transcriptionjob.yaml"
CHART = REPO / "charts" / "whisperfleet"
# The `whisperfleet` entry point installed beside the interpreter running the tests.
WHISPERFLEET = Path(sys.executable).parent / "whisperfleet"
