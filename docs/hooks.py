"""MkDocs hook: the docstrings use Sphinx roles (:func:`x`, :class:`x`); mkdocstrings renders docstrings as
Markdown, where a role would show as literal text before the code span. Drop the role, keep the code."""

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|py:\w+):(?=<code>)")


def on_page_content(html, page, config, files):
    return _ROLE.sub("", html)
