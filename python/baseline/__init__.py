"""The comparison service: the same API built with today's usual libraries."""
