"""Build hook: the site makes no request outside itself.

The notebook pages come with nbconvert's loaders for Mermaid (from cdnjs, run only when a page holds
a diagram) and an empty MathJax source; this drops such scripts from the written HTML, so that no
page refers to a CDN at all.
"""
import re

_EXTERNAL_SCRIPT = re.compile(
    r"<script\b[^>]*>(?:(?!</script>).)*?https://(?:cdnjs\.cloudflare\.com|unpkg\.com|cdn\.jsdelivr\.net)"
    r"(?:(?!</script>).)*?</script>|<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>|<script src=\"\">\s*</script>",
    re.DOTALL)


def on_post_page(output: str, page, config) -> str:
    return _EXTERNAL_SCRIPT.sub("", output)
