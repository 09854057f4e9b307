"""The bundled quickstart task: support messages to a four-field JSON record (see `task`)."""
