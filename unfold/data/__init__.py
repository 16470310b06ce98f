"""The HDF5 schema (SPANet layout plus truth), atomic writes and the event tensors models train on."""
