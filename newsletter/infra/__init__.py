"""Wire clients, apart from the domain: SMTP, a lean Redis client, the libpq fast path, the send-rate bucket."""
