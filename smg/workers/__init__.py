"""Workers: the record of one inference server, and the registry of all of them."""
