"""HTTP only: parse requests, call services, render results. No SQL here."""
