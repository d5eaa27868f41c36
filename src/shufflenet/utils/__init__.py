"""Small helpers with no model knowledge: complexity counting, file safety, logging."""
