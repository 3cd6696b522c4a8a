"""Studies built on the core: each subpackage holds one line of theory or one experiment, with its computations,
its report and its command. The core packages (``nets``, ``diffusion``, ``data``, ``training``) import nothing
from here; studies plug into training through its callbacks."""
