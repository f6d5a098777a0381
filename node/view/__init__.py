"""What a dashboard sees of a node and what it may ask of it, by value.

``snapshot`` (frozen pictures, the only thing widgets read), ``builder`` (makes them
from the live node through narrow ports), ``framelog`` (the recent frames in and out),
``trace`` (each recent event's way across the nodes) and ``commands`` (what a
dashboard asks the node to do).
"""
