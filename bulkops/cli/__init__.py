"""The client commands of the CLI. The engine and the server meet here (and in tests) only."""
