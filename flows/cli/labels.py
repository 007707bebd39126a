"""The commands a person corrects tags with: ``mlc labels set`` and ``mlc labels clear``.

A correction is recorded at once (no flow: it is one row per tag) and wins over every model in
the views from that moment; the next training learns from it.
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from flows.cli.app import labels_app, print_document
from flows.cli.tags import normalized
from flows.common import opened_workspace


def correction_source(command: str) -> str:
    """Who corrected, as the label's provenance: the command and the user running it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown user"
    return f"{command} by {user}"


# Changes look like options (-trees), so the command takes unknown options as arguments.
@labels_app.command(
    "set", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True}
)
def labels_set(
    key: Annotated[str, typer.Argument(help="the image's key, e.g. images/a.jpg")],
    changes: Annotated[
        list[str], typer.Argument(metavar="+TAG|-TAG...", help="+TAG adds a tag, -TAG removes it")
    ],
) -> None:
    """Correct one image's tags: they stay fixed whatever any model says, and teach the next."""
    from mlc_core.jobs.corrections import correct_tags, parse_changes
    from mlc_core.reports.tags import correction_summary

    add, remove = parse_changes(changes)
    with opened_workspace() as workspace, workspace.transaction() as session:
        correction = correct_tags(
            session,
            workspace.store,
            key,
            add=add,
            remove=remove,
            source=correction_source("mlc labels set"),
        )
    print_document(correction_summary(correction))


@labels_app.command("clear")
def labels_clear(
    key: Annotated[str, typer.Argument(help="the image's key")],
    tags: Annotated[
        list[str] | None, typer.Argument(metavar="[TAG]...", help="default: every labelled tag")
    ] = None,
) -> None:
    """Hand an image's tags back to the model: delete a person's labels of them."""
    from mlc_core.jobs.corrections import clear_corrections
    from mlc_core.reports.tags import correction_summary

    with opened_workspace() as workspace, workspace.transaction() as session:
        correction = clear_corrections(session, workspace.store, key, normalized(tags))
    print_document(correction_summary(correction))
