"""The commands of the `circuitstore` CLI: thin layers over the libraries, one module each."""
