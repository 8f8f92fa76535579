"""osdhuman: human body restoration with a one-step diffusion model (OSDHuman, ICML 2025),
the HQ-ACF dataset pipeline and the PERSONA benchmark."""

__version__ = "0.1.0"
