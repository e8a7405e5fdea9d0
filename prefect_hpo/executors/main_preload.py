"""Named first in the fork server's preload list, and imported there alone: what the fork server does first.

It asks to die with the sweep's process (`fork_server_dies_with_parent`), then loads the parent's main
script. Importing it is what runs both (the fork server can only import modules by name); nothing else
imports it. See `main_script` for why the fork server, not multiprocessing, loads the script."""

from prefect_hpo.executors.main_script import load_parent_main
from prefect_hpo.helpers import fork_server_dies_with_parent

fork_server_dies_with_parent()
load_parent_main()
