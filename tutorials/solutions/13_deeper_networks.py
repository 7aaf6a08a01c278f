"""Worked solution to tutorial 13's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""


def residual_backward(block, dy):
    """Backward through a BasicBlock without downsampling: out = relu_out(body(x) + x)."""
    d_sum = block.relu_out.backward(dy)            # through the final ReLU
    d_body = block.bn2.backward(d_sum)             # the body, in reverse order
    d_body = block.conv2.backward(d_body)
    d_body = block.relu.backward(d_body)
    d_body = block.bn1.backward(d_body)
    d_body = block.conv1.backward(d_body)
    return d_body + d_sum                          # the skip: d(body + x)/dx adds d_sum
