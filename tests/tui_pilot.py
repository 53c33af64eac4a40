"""Helpers for the wizard's Pilot tests: read what is on the screen as plain text."""

from __future__ import annotations

import io

from rich.console import Console


def screen_text(app) -> str:
    """The current screen (with any screens showing beneath it) as plain text."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True, record=True
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


async def settle(app, pilot) -> None:
    """Wait for the wizard's workers (not the directory tree's endless loader) and a repaint."""
    from textual.widgets import DirectoryTree

    await pilot.pause()
    while True:
        busy = [
            w for w in app.workers if not w.is_finished and not isinstance(w.node, DirectoryTree)
        ]
        if not busy:
            break
        try:
            await app.workers.wait_for_complete(busy)
        except Exception:  # a failed worker shows the error dialog; tests look for that
            pass
    # The tree lists folders in that endless loader; its queue says when the listing is done.
    # Without this wait, snapshots of the data screen caught the tree half-filled now and then.
    for tree in app.screen.query(DirectoryTree).results(DirectoryTree):
        await tree._load_queue.join()
    # Results arrive as messages (call_from_thread, dialogs being pushed): let them land.
    for _ in range(3):
        await pilot.pause()
