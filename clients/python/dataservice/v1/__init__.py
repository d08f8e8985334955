"""Generated from protos/dataservice/v1 by ``make stubs``; never edit the ``*_pb2*`` files by hand."""
