"""The command line: flags and variables (``main.py``), what each command does (``commands.py``),
local worker processes and the dashboards."""
