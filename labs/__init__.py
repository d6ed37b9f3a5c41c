"""labgrid environments and helpers of the pyrauc lab (QEMU/OVMF and real boards)."""
