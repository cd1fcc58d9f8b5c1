"""Storage credentials of the tests' own S3 server (moto): fake, but treated as secrets —
they must never appear in logs, reports, status or outputs."""

S3_ACCESS_KEY = "AKIAWHISPERFLEETTEST"
S3_SECRET_KEY = "wJalrXUtnFEMI-whisperfleet-test-secret-DO-NOT-LEAK"
