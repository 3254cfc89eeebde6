"""MkDocs hooks (mkdocs.yml `hooks:`): the reference pages, generated from the code at build time.

The configuration, schema and metrics pages come from clevertim_sync/reference.py; the command
line's page is rendered by the mkdocs-click extension from click itself, once every command's
module is imported (the CLI loads them lazily).
"""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files

from clevertim_sync import reference
from clevertim_sync.cli import load_all


def on_config(config: Any) -> Any:
    load_all()  # mkdocs-click lists the commands the group has loaded
    return config


def on_files(files: Files, config: Any) -> Files:
    for path, page in reference.PAGES.items():
        files.append(File.generated(config, path, content=page()))
    return files
