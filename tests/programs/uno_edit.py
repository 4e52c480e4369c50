"""Edit one document in place with a running LibreOffice, over UNO (run with the system Python
that has the ``uno`` module: Debian's ``python3-uno``).

    /usr/bin/python3 uno_edit.py PIPE_NAME PATH MARKER

Connects to ``soffice --accept=pipe,name=PIPE_NAME;urp;``, loads PATH (hidden), puts MARKER into
it (cell A1 of the first sheet of a spreadsheet, or a new paragraph at the end of a text),
prints ``loaded`` and waits for one line on stdin, then ``store()``s the document in place,
prints ``stored``, closes it and prints ``closed``. Errors go to stderr with a non-zero exit.
"""

import sys
import time

import uno  # type: ignore[import-not-found]
from com.sun.star.beans import PropertyValue  # type: ignore[import-not-found]
from com.sun.star.connection import NoConnectException  # type: ignore[import-not-found]

CONNECT_TIMEOUT = 90.0


def prop(name, value):
    result = PropertyValue()
    result.Name = name
    result.Value = value
    return result


def connect(pipe):
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        "com.sun.star.bridge.UnoUrlResolver", local
    )
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            return resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
        except NoConnectException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # soffice is still starting


def main():
    pipe, path, marker = sys.argv[1:4]
    ctx = connect(pipe)
    desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    url = uno.systemPathToFileUrl(path)
    doc = desktop.loadComponentFromURL(url, "_blank", 0, (prop("Hidden", True),))
    if doc is None:
        sys.exit(f"LibreOffice could not load {path}")
    try:
        if doc.supportsService("com.sun.star.sheet.SpreadsheetDocument"):
            doc.Sheets.getByIndex(0).getCellByPosition(0, 0).setString(marker)
        else:
            text = doc.getText()
            text.insertControlCharacter(text.getEnd(), 0, False)  # PARAGRAPH_BREAK
            text.insertString(text.getEnd(), marker, False)
        print("loaded", flush=True)
        sys.stdin.readline()
        doc.store()
        print("stored", flush=True)
    finally:
        doc.close(True)
    print("closed", flush=True)


if __name__ == "__main__":
    main()
