"""Tools: run every notebook, render the site, benchmark, estimate run times, the web app."""
