// xterm.js set-up: addons, theme that follows the system, fitting, clipboard.

import { Terminal, type ITheme } from "@xterm/xterm";
import { ClipboardAddon, type IClipboardProvider } from "@xterm/addon-clipboard";
import { FitAddon } from "@xterm/addon-fit";
import { Unicode11Addon } from "@xterm/addon-unicode11";
import { WebLinksAddon } from "@xterm/addon-web-links";

/** Lines of scrollback the browser keeps. */
const SCROLLBACK_LINES = 10_000;

/** The system's monospace fonts; no web font is fetched from anywhere. */
export const DEFAULT_FONT_FAMILY = 'ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace';

export const DARK: ITheme = {
  background: "#16181d",
  foreground: "#d7dae0",
  cursor: "#d7dae0",
  cursorAccent: "#16181d",
  selectionBackground: "#3a4560",
  black: "#2e323b",
  red: "#f0706a",
  green: "#7ccf7e",
  yellow: "#e0c26c",
  blue: "#6aa6f8",
  magenta: "#c79bf2",
  cyan: "#5fc9d6",
  white: "#d7dae0",
  brightBlack: "#6a7078",
  brightRed: "#ff8f87",
  brightGreen: "#9be39c",
  brightYellow: "#f2d68a",
  brightBlue: "#8dbcff",
  brightMagenta: "#dab6ff",
  brightCyan: "#85dde8",
  brightWhite: "#ffffff",
};

export const LIGHT: ITheme = {
  background: "#fbfbf9",
  foreground: "#24292f",
  cursor: "#24292f",
  cursorAccent: "#fbfbf9",
  selectionBackground: "#b6d3f5",
  // xterm's default palette is tuned for dark backgrounds; these stay legible on light.
  black: "#24292f",
  red: "#c4302b",
  green: "#1a7f37",
  yellow: "#8a6100",
  blue: "#0550ae",
  magenta: "#8250df",
  cyan: "#1b7c83",
  white: "#6e7781",
  brightBlack: "#57606a",
  brightRed: "#e0413c",
  brightGreen: "#2da44e",
  brightYellow: "#a37500",
  brightBlue: "#218bff",
  brightMagenta: "#a475f9",
  brightCyan: "#3192aa",
  brightWhite: "#8c959f",
};

/** How a terminal is set up. */
export interface TerminalSetup {
  theme: "auto" | "light" | "dark";
  fontSize: number;
  fontFamily: string;
  copyOnSelect: boolean;
  rightClickPaste: boolean;
  osc52Clipboard: boolean;
}

/** A terminal mounted in a container, and how to refit and remove it. */
export interface MountedTerminal {
  term: Terminal;
  /** Refits to the container (coalesced to one fit per animation frame). */
  fit: () => void;
  dispose: () => void;
}

/** Creates a terminal in `container` that fills it, refits when it changes size, and follows the system theme. */
export function createTerminal(container: HTMLElement, setup: TerminalSetup): MountedTerminal {
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  const themeNow = (): ITheme => {
    if (setup.theme === "auto") return dark.matches ? DARK : LIGHT;
    return setup.theme === "dark" ? DARK : LIGHT;
  };
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: setup.fontFamily,
    fontSize: setup.fontSize,
    scrollback: SCROLLBACK_LINES,
    theme: themeNow(),
    // The Unicode 11 width tables are a "proposed" API.
    allowProposedApi: true,
  });
  const fitAddon = new FitAddon();
  term.loadAddon(fitAddon);
  term.loadAddon(new Unicode11Addon());
  term.unicode.activeVersion = "11";
  term.loadAddon(new WebLinksAddon(openLink));
  if (setup.osc52Clipboard) term.loadAddon(new ClipboardAddon(undefined, writeOnlyClipboard));
  term.open(container);

  // The padding around the cells takes the terminal's background too.
  const onScheme = (): void => {
    const theme = themeNow();
    term.options.theme = theme;
    container.style.backgroundColor = theme.background ?? "";
  };
  onScheme();
  dark.addEventListener("change", onScheme);

  const disposables = [
    setup.copyOnSelect ? term.onSelectionChange(() => copy(term.getSelection())) : null,
  ];
  // Ctrl+V and Ctrl+Shift+V paste (xterm.js would send ^V): let the browser
  // fire its paste event, which xterm.js turns into (bracketed) input.
  // Ctrl+Shift+C copies. Cmd+V and Cmd+C on macOS work without help.
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type !== "keydown" || !ev.ctrlKey || ev.altKey || ev.metaKey) return true;
    const key = ev.key.toLowerCase();
    if (key === "v") return false;
    if (key === "c" && ev.shiftKey) {
      copy(term.getSelection());
      ev.preventDefault();
      return false;
    }
    return true;
  });

  // Right-click pastes (PuTTY, Windows Terminal) when the page may read the
  // clipboard; otherwise the browser's menu, whose Paste xterm.js supports,
  // opens as usual. Shift+right-click always opens the browser's menu.
  const onContextMenu = (ev: MouseEvent): void => {
    if (ev.shiftKey || !window.isSecureContext || !navigator.clipboard?.readText) return;
    ev.preventDefault();
    navigator.clipboard.readText().then(
      (text) => {
        if (text !== "") term.paste(text);
      },
      () => {
        // Reading was refused (permission denied): nothing is pasted, and
        // Ctrl+V or the menu (Shift+right-click) still work.
      },
    );
  };
  if (setup.rightClickPaste) container.addEventListener("contextmenu", onContextMenu);

  // Coalesce bursts of resize notifications into one fit per frame.
  let pending = 0;
  const fit = (): void => {
    if (pending !== 0) return;
    pending = requestAnimationFrame(() => {
      pending = 0;
      if (container.isConnected && container.clientWidth > 0) fitAddon.fit();
    });
  };
  const observer = new ResizeObserver(fit);
  observer.observe(container);
  fitAddon.fit();

  const dispose = (): void => {
    cancelAnimationFrame(pending);
    observer.disconnect();
    dark.removeEventListener("change", onScheme);
    container.removeEventListener("contextmenu", onContextMenu);
    for (const d of disposables) d?.dispose();
    term.dispose();
  };
  return { term, fit, dispose };
}

/** Copies text to the clipboard when the browser allows it (a secure context, with permission). */
function copy(text: string): void {
  if (text === "" || !window.isSecureContext || !navigator.clipboard) return;
  navigator.clipboard.writeText(text).catch(() => {
    // Not permitted here (e.g. an iframe without clipboard-write): the selection stays usable.
  });
}

/** Opens a clicked link in a new tab that cannot reach back into this page. */
function openLink(event: MouseEvent, uri: string): void {
  event.preventDefault();
  window.open(uri, "_blank", "noopener,noreferrer");
}

/** OSC 52 may set the clipboard, never read it: a program must not see what the viewer copied. */
const writeOnlyClipboard: IClipboardProvider = {
  readText: () => "",
  writeText: (selection, text) => {
    if (String(selection) === "c") copy(text);
  },
};
