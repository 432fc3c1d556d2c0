# A shell script that sleeps forever, a second at a time.
while :; do sleep 1; done
