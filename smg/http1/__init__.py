"""HTTP/1.1: events, the request/response parsers (native or pure-Python twin), the writer."""
