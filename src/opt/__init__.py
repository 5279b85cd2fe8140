"""OPT: the Omni-Perception Pre-Trainer, with its data pipeline."""

import os

# Telemetry of every tool we use is off in every process that imports us.
for _key, _value in {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "True",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
