"""The terminal agent on a reading workstation: local cache of assigned exams HR tiles, download, loopback server."""
