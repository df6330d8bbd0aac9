"""Keras Hub backbones and tasks: recipes that rebuild the layer graph a Keras Hub constructor builds."""
