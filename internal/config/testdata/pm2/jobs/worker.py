import time
while True:
    print("working", flush=True)
    time.sleep(5)
