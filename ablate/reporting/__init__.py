"""What results files say: statistics over seeds, tables, the HTML page, figures."""
