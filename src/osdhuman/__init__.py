"""osdhuman: human body restoration with a one-step diffusion model (OSDHuman, ICML 2025),
the HQ-ACF dataset pipeline and the PERSONA benchmark."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (installed by the optional pyiqa, imported by diffusers' quantizers) warns at
# import time that it cannot fetch CPU kernels from a hub; nothing in osdhuman uses them.
_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)
# On a CPU with AVX512-BF16 that same import asks the `kernels` package (a dependency of
# transformers) for 'kernels-community/quantization-bitsandbytes'; under HF_HUB_OFFLINE=1 its
# logger warns "Skipping publisher trust check ..." on every run. The kernel is never used here.
_logging.getLogger("kernels").setLevel(_logging.ERROR)
