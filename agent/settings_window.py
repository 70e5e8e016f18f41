"""The settings window: router URL, registration token, node name and runtime URL, and each
router's connection state (registered, last heartbeat, error), refreshed every second.

`SettingsForm` is the logic (load, validate, save) and works without a display; the tkinter
window is a thin face on it. The tray runs this module as its own process
(`python -m agent.settings_window --config FILE --status FILE`): exit code 0 means saved, 1
cancelled. The connection state comes from the status file the tray keeps (status_file.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config import (
    EDITABLE,
    AgentConfig,
    ConfigError,
    load_config,
    save_settings,
    validate_editable,
)
from agent.paths import APP_ICON_PNG
from agent.status_file import connection_lines, read_status, status_path

REFRESH_MS = 1000

LABELS = {
    "router_url": "Router URL(s), comma separated",
    "registration_token": "Registration token (optional)",
    "node_name": "Node name",
    "runtime_url": "Runtime URL",
}


class SettingsForm:
    """Field values as text, validated together, saved into the agent's TOML file."""

    def __init__(self, config: AgentConfig) -> None:
        self.path = config.config_path
        self.initial = {
            "router_url": ",".join(config.router_url),
            "registration_token": config.registration_token or "",
            "node_name": config.node_name,
            "runtime_url": config.runtime_url,
        }

    def validate(self, raw: Mapping[str, str]) -> dict[str, str]:
        """{setting: message} for each bad field; empty when all are good."""
        return validate_editable(raw)[1]

    def save(self, raw: Mapping[str, str]) -> dict[str, str]:
        """Validate and, when valid, write the file. Returns the errors (empty = saved)."""
        parsed, errors = validate_editable(raw)
        if errors:
            return errors
        updates: dict[str, Any] = {key: parsed[key] for key in EDITABLE}
        try:
            save_settings(self.path, updates)
        except (OSError, ConfigError) as exc:
            return {"file": f"cannot save {self.path}: {exc}"}
        return {}


class SettingsWindow:
    """tkinter window over a SettingsForm. `run()` blocks; returns True when saved."""

    def __init__(self, form: SettingsForm, status_file: Path | None = None) -> None:
        import tkinter as tk

        self.form = form
        self.status_file = status_file or status_path(form.path)
        self.saved = False
        self.root = tk.Tk()
        self.root.title("LLM Router agent settings")
        self.root.resizable(False, False)
        self._set_icon()
        self.vars: dict[str, tk.StringVar] = {}
        for row, key in enumerate(EDITABLE):
            tk.Label(self.root, text=LABELS[key]).grid(
                row=row, column=0, sticky="w", padx=8, pady=4
            )
            var = tk.StringVar(self.root, value=form.initial[key])
            entry = tk.Entry(self.root, textvariable=var, width=48)
            if key == "registration_token":
                entry.configure(show="•")
            entry.grid(row=row, column=1, padx=8, pady=4)
            self.vars[key] = var
        self.error = tk.Label(self.root, text="", fg="#b00020", justify="left")
        self.error.grid(row=len(EDITABLE), column=0, columnspan=2, sticky="w", padx=8)
        box = tk.LabelFrame(self.root, text="Connection")
        box.grid(row=len(EDITABLE) + 1, column=0, columnspan=2, sticky="we", padx=8, pady=4)
        self.connection = tk.Label(box, text="", justify="left", anchor="w", wraplength=520)
        self.connection.pack(fill="x", padx=6, pady=4)
        buttons = tk.Frame(self.root)
        buttons.grid(row=len(EDITABLE) + 2, column=0, columnspan=2, sticky="e", padx=8, pady=8)
        tk.Button(buttons, text="Cancel", command=self.root.destroy).pack(side="right", padx=4)
        tk.Button(buttons, text="Save", command=self.on_save).pack(side="right")
        self.root.bind("<Escape>", lambda _e: self.root.destroy())
        self.refresh_connection()

    def _set_icon(self) -> None:
        try:
            import tkinter as tk

            self._icon = tk.PhotoImage(master=self.root, file=str(APP_ICON_PNG))
            self.root.iconphoto(True, self._icon)
        except Exception:  # a window without its icon is still a window
            pass

    def connection_text(self) -> str:
        lines = connection_lines(read_status(self.status_file), time.time())
        return "\n".join(f"{where}: {what}" for where, what in lines)

    def refresh_connection(self) -> None:
        """Re-read the agent's state and show it; runs again every REFRESH_MS while open."""
        self.connection.configure(text=self.connection_text())
        self.root.after(REFRESH_MS, self.refresh_connection)

    def values(self) -> dict[str, str]:
        return {key: var.get() for key, var in self.vars.items()}

    def on_save(self) -> None:
        errors = self.form.save(self.values())
        if errors:
            self.error.configure(text="\n".join(f"{k}: {v}" for k, v in errors.items()))
            return
        self.saved = True
        self.root.destroy()

    def run(self) -> bool:
        self.root.mainloop()
        return self.saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.settings_window")
    parser.add_argument("--config", type=Path, help="the agent's TOML file to edit")
    parser.add_argument(
        "--status", type=Path, help="the running agent's status file (default: next to --config)"
    )
    args = parser.parse_args(argv)
    try:
        config = (
            load_config(config_file=args.config)
            if args.config is None or args.config.is_file()
            else None
        )
        if config is None:  # a new file: start from defaults, save to the given path
            config = load_config(flags={"config_path": str(args.config)}, env={})
    except ConfigError as exc:
        print(f"settings: {exc}", file=sys.stderr)
        return 2
    try:
        window = SettingsWindow(SettingsForm(config), args.status)
    except Exception as exc:  # tkinter.TclError without a display
        print(f"settings: cannot open a window: {exc}", file=sys.stderr)
        return 2
    return 0 if window.run() else 1


if __name__ == "__main__":
    sys.exit(main())
