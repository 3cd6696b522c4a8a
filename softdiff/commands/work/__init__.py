"""The work of each command, one module per command (``run(...)``), with its heavy imports at the top.

``softdiff.commands.NAME`` checks the arguments without them and hands what the work needs to ``run`` through
:func:`softdiff.command_line.run_work`, the one place that imports these modules.
"""
