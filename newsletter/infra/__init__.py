"""Wire clients the services call through small seams: the domain never speaks a protocol itself."""
