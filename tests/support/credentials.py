"""Storage credentials of the tests' own servers (moto for S3, Azurite for Azure): fake, but
treated as secrets — they must never appear in logs, reports, status or outputs. (The GCS
emulator takes no credentials, as Google's clients use none against one.)"""

S3_ACCESS_KEY = "AKIAWHISPERFLEETTEST"
S3_SECRET_KEY = "wJalrXUtnFEMI-whisperfleet-test-secret-DO-NOT-LEAK"
# Azurite's account for the tests (AZURITE_ACCOUNTS): the key is base64, as Azure's are.
AZURE_ACCOUNT = "wfaccount"
AZURE_ACCOUNT_KEY = "d2hpc3BlcmZsZWV0LWF6dXJpdGUtdGVzdC1rZXktRE8tTk9ULUxFQUs="
