"""Wire clients, apart from the domain: SMTP, a lean Redis client, the libpq fast path, the send-rate
bucket, outbound HTTP for feeds. The services call them through small seams."""
