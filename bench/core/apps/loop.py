# A python3 process that sleeps forever, a second at a time.
import time

while True:
    time.sleep(1)
