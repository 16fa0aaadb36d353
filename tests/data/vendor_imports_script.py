# A script in the vendor's style that uses every vendor module rkfarm mirrors (functions/onnx_edit and
# functions/custom_op do the same). The test replaces only the import lines. Usage: python it.py WORKDIR
import os
import sys

import numpy as np
import onnx
from rknn.api import RKNN
from rknn.api.custom_op import get_node_attr
from rknn.utils import onnx_edit

if __name__ == '__main__':
    os.chdir(sys.argv[1])

    # the model's Concat axis, read as a custom op's compute() reads its node's attributes
    model = onnx.load('./concat_block.onnx')
    concat = [n for n in model.graph.node if n.op_type == 'Concat'][0]
    print('concat axis', get_node_attr(concat, 'axis'))

    ret = onnx_edit(model='./concat_block.onnx',
                    export_path='./concat_block_edited.onnx',
                    inputs_transform={'k_cache.1': 'a,b,c,d->1,ad,b,c'},
                    outputs_transform={'k_cache': 'a,b,c,d->1,ab,c,d'},
                    dataset='./dataset.txt')
    if ret != 0:
        print('onnx_edit failed!')
        exit(ret)
    print('done')

    rknn = RKNN(verbose=False)
    rknn.config(target_platform='rk3588')
    ret = rknn.load_onnx('./concat_block_edited.onnx')
    if ret != 0:
        print('Load model failed!')
        exit(ret)
    ret = rknn.build(do_quantization=True, dataset='./dataset_for_concat_block_edited.txt')
    if ret != 0:
        print('Build model failed!')
        exit(ret)
    ret = rknn.init_runtime()
    if ret != 0:
        print('Init runtime environment failed!')
        exit(ret)
    cache = np.load('./dataset_for_concat_block_edited/cache0.npy')
    new = np.load('./dataset_for_concat_block_edited/new0.npy')
    outputs = rknn.inference(inputs=[cache, new], data_format=['nchw', 'nchw'])
    np.save('./out.npy', outputs[0])
    print('outputs', outputs[0].shape)
    rknn.release()
