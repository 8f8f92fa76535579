"""``osdhuman app``: a local web app to restore photos and browse datasets and results.

Built on Gradio (the convention of this field: S3Diff and InvSR ship one; its ImageSlider is
the before/after view). It sits beside the command line and calls the same functions
(``restore_paths``, the curation detector, the evaluate output files); of the ``cli``
package it imports only ``weights_env`` (the weights configured through the environment). Bound to 127.0.0.1 unless told otherwise, no share links, analytics off,
local fonts only: the page loads nothing from the internet.

Modules: ``config`` (AppConfig), ``restore_tab`` / ``dataset_tab`` / ``results_tab`` (what each
tab computes, testable without a browser), ``ui`` (the Gradio layout), ``server`` (host and
port checks, launch).
"""

from osdhuman.app.config import AppConfig

__all__ = ["AppConfig"]
