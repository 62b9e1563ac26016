"""`seektune report`: one self-contained HTML page (and PNGs) over a sweep or several run folders."""
