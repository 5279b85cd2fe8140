"""`dvc plots show` offline: an HTML template holding Vega, Vega-Lite and Vega-Embed itself.

DVC's default page loads those three libraries from a CDN, so without the internet it shows no
chart. `.dvc/config` names this template (`plots.html_template`); `scripts/setup.sh` writes it:

    python -m opt.dvc_plots            # -> .dvc/plots_template.html (git-ignored, ~0.9 MB)

The libraries come from vl-convert-python (the Vega project's own converter, which carries them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from opt.config import PROJECT_ROOT

TEMPLATE = PROJECT_ROOT / ".dvc" / "plots_template.html"  # .dvc/config: plots.html_template
VEGA_LITE = "5.20"  # DVC's plot templates are Vega-Lite 5 specs
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
    <script>BUNDLE</script>
    <style>table { border-spacing: 15px; }</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""  # DVC's own page with the libraries inline and no {scripts} (where DVC puts its CDN tags)


def write_template(path: Path = TEMPLATE) -> Path:
    """Write the offline page template for DVC to `path`; returns it."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)  # puts vega, vegaLite, vegaEmbed on window
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PAGE.replace("BUNDLE", bundle.replace("</script", "<\\/script")), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_template(Path(sys.argv[1]) if len(sys.argv) > 1 else TEMPLATE))
