"""Serial port backends behind one interface (:class:`comtunnel.ports.base.SerialPort`)."""
