#!/bin/sh
# Started by D-Bus activation where systemd does not run the service (see rauc.service).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec /usr/local/bin/rauc service
