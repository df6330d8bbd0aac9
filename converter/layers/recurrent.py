"""Recurrent layers as ONNX RNN/GRU/LSTM ops: SimpleRNN, GRU, LSTM, Bidirectional, ConvLSTM."""

from __future__ import annotations
